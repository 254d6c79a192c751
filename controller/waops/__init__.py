"""waops: operations toolkit for WhatsApp bots built on Baileys."""

__version__ = "0.1.0"
