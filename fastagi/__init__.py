"""FastAGI transport: decodes Asterisk's AGI wire protocol and answers with channel variables."""
