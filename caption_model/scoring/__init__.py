"""The official protocols: densevid_eval's dense-captioning scores and ActivityNet's AR@AN.

No torch here: a scorer must load in a process without it (the viewer, a notebook).
"""
