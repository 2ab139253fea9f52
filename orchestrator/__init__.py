"""rumistack: RumiTalk behind nginx with HTTP Basic Auth, done right."""

__version__ = "0.1.0"
