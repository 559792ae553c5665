"""voxmeter: what a speech model costs to run, and which cheaper configuration keeps its accuracy."""

__version__ = "0.1.0"
