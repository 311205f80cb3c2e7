class EventGrid:
    def __init__(self, *a): pass
    def add_routes(self, web_app): pass
    async def start(self): pass
    async def stop(self): pass
