"""Temporal event proposals and dense captioning: which parts of a raw video hold an event.

An SST-style model over a store's rows (`model`), its training windows and labels
(`data`), training (`train`), inference and NMS (`infer`), held-out scoring
(`evaluate`), the baselines it is measured against (`baselines`), and `dense`,
the one place where proposals and the captioner meet (events, then captions).
"""
