"""Server CA: templates, signer, key managers, slot model and the rotating CA manager."""
