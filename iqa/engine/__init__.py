"""The engines that run the methods over many files: the streaming pipeline, its decoding processes, the disk
cache, result files, and Ray."""
