"""Delivery transports behind one small interface: SFTP, local folder, manual hand-off."""
