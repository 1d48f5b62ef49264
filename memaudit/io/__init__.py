"""Input and output: text readers, the embedded corpus, run directories, atomic writes,
configuration.
"""
