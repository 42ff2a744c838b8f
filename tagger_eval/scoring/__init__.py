"""Scoring: the seed score per post, tag scopes, threshold metrics and the tag-distance soft score."""
