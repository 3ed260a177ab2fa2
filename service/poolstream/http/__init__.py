"""The HTTP/JSON front door (OpenAI, vLLM, TEI routes and the page); see app.py."""
