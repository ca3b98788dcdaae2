"""Labels in a pipeline: applying heads (`classify`) and training one
(`train_head`).
"""
