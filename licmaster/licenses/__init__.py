"""License files into the model, and the installation's verdict (`licmaster check`)."""
