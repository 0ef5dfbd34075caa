"""The wire protocol between regions (DESIGN §4). See :mod:`wire.protocol`."""
