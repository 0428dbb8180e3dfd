"""The built-in demo (`etspipe demo`): generated captioned videos run through both real stages.

It sits above the stages, beside the CLI: it may import `extract_features`,
`caption_model` and click; nothing in the stages or in `etspipe/` imports it.
One module per job:

* `grammar`  - the caption grammar, and when a predicted caption is correct
* `params`   - the parameters of a generated set
* `scenes`   - what each video shows (events, times, trajectories)
* `render`   - drawing a scene into frames
* `mp4`      - the project's one MP4 writer (also used by the tests)
* `dataset`  - writing the videos and ActivityNet-format annotations of a set
* `cache`    - the files of a set on disk, and when a set can be reused
* `scoring`  - correct-caption counts per kind of segment
* `stages`   - reuse of finished stages on a rerun
* `report`   - the report a run prints
* `run`      - the five stages in order (`run_demo`)
"""
