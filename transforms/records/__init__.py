"""Records in a pipeline: files in and out (`files`), lines to records
(`parse`) and the dead letters of every stage (`dead_letters`).
"""
