"""Pure pipeline domain: specs, steps, codecs, traffic policy. Never imports ray."""
