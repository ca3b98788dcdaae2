"""Records: the field names and tags every floor shares (`schema`), and
what a valid record is (`validation`).
"""
