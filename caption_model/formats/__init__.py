"""The files stage 2 reads and writes: annotations, file lists, results, subtitles, sidecars, plots, vocabularies.

No torch here: a format must load in a process without it (the viewer, a notebook).
"""
