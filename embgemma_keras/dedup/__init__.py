"""Near-duplicate detection, Beam-free: MinHash (`minhash`), stream
sketches (`sketches`), one stream bucket's verdicts (`stream_buckets`),
pairs to groups (`grouping`) and a corpus run's report (`report`).
"""
