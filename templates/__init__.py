"""Jinja2 templates, installed as the package ``multiagent.templates``."""
