"""Generators: a Prompt in, a Generation out. Backends register under kind "generator"."""
