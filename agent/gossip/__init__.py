"""Gossip membership on Consul's own wire format: SWIM (memberlist) and Serf above it.

Pure state machines (`swim`, `serf`) decide; codecs (`codec`, `security`) turn their messages
into memberlist's bytes; the Twisted adapter moves the bytes. See each module's docstring.
"""
