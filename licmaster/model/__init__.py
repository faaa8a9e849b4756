"""The license model: pure, no I/O. Catalog and rules, what is installed, how PBXs draw from it,
floating leases and user licenses, behind the `Pool` facade."""
