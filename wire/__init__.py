"""The wire protocol between regions. See :mod:`wire.protocol`."""
