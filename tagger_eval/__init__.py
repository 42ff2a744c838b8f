"""tagger-eval: measure how well image taggers reproduce Danbooru's human tags."""

__version__ = "0.1.0"
