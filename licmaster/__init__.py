"""licmaster: a license master for PBX networks (the innovaphone V13 license model)."""

__version__ = "0.1.0"
