"""The service's routes, one APIRouter per concern: health, the OpenAI API, sessions, LangServe."""
