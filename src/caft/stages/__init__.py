"""One module per ``rules/<name>.smk``, one function per rule, named after the rule.

Each function reads its rule's input files, calls the library and writes its artifacts, so every stage
runs and is tested without Snakemake; ``workflow/scripts/<rule>.py`` only maps ``snakemake.input``,
``output``, ``params`` and ``log`` onto it. Stages never import other stages: what two stages share lives
in the library subpackages.
"""
