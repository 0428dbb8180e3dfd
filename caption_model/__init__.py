"""Stage 2: the ETS temporal-attention LSTM captioner on cached features.

annotations (ActivityNet / YouCook2 JSON and their quirks) -> text (PTB-like
tokenizer, vocabulary) -> dataset (lazy store reads, bucketed batches) -> model
(ETS, step API for decoding) -> train (loop, validation, checkpoints, DDP).
Decoding, scoring, prediction and plots live in their own modules. Nothing is
imported here so that `import caption_model.formats.text` stays light.
"""
