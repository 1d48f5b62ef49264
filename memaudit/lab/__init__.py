"""Controlled experiments: canaries, their insertion, small LMs trained from scratch,
extraction, the demo.
"""
