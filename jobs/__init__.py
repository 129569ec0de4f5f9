"""Thin entry points, one per stage: parse arguments, get the SparkSession, call featstore, exit.

Each ``jobs/<stage>.py`` is what ``spark-submit`` runs; ``featstore <stage>`` runs the same code.
"""
