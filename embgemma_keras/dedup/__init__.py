"""Near-duplicate detection, Beam-free: MinHash (`minhash`), stream
sketches (`sketches`), one stream bucket's verdicts and the stream
detector's elements (`stream_buckets`), pairs to groups and the record a
group kept (`grouping`) and a corpus run's report (`report`).
"""
