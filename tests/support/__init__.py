"""Test helpers usable by every tier: the emulator and local-stack fixtures (tests.support.stack)."""
