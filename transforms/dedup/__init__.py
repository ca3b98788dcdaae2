"""Near-duplicates in a pipeline: exact and MinHash stages
(`exact_and_lexical`), semantic (`semantic`), a corpus's whole graph
(`corpus`) and a stream's horizon detector (`streaming`).
"""
