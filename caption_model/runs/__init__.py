"""What the captioner's and the proposal model's training runs share.

Checkpoints and the run folder, RNG state, stop requests, DDP, precision, the
Noam schedule and the training log. Nothing here knows either model.
"""
