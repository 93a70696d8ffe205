"""PyTorch side of the search: data on the device, models, the shared training loop."""
