"""slave_sim: a simulated PBX network around a licmaster, driven by scripted scenarios."""
