"""Experiments built on bench's general machinery: configs in conf/experiment/, analysis here.

`+experiment=heart` (conf/experiment/heart.yaml) reproduces the heart-disease claim; its report
section (`bench.experiments.heart_report`) is added to `python -m bench report` whenever a run
holds grid-search rows (a `cv_score`), whatever the dataset.
"""
