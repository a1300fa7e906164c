"""Dockerfile builds, step by step, each step in a fenced container (see the builder README).

parser.py        the Dockerfile text to stages of instructions (no engine involved)
words.py         `$VAR` substitution and quote handling, as Docker's shell lexer does it
dockerignore.py  which context paths `.dockerignore` leaves out
context.py       tar streams for COPY/ADD built from the context without following links
bases.py         which `FROM` images a customer may name
steps.py         one RUN or COPY on the engine: a hardened container, then a commit
executor.py      the stages in order, their image configs, and the clean-up
"""
