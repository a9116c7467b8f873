"""Student training: the loader that replays cached views, the losses, the training loop."""
