"""Speed benchmarks of genrepair's train steps (not tests; see benchmarks/README.md).

``python -m benchmarks.step --model dcgan|dncnn|srcnn|espcn|all`` times the real jitted
train step next to the same architecture in eager PyTorch (optional ``[bench]`` extra).
"""
