"""Subcommands of ``ltbench`` beyond LightningCLI's (dispatched by ``ltbench/cli.py``).

The command layer: it may import anything in ``ltbench``; nothing else in ``ltbench`` imports it.
"""
