"""Experiment configs (`get_config(arg)`) and the code that turns their results into tables and figures."""
