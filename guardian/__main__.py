from guardian.cli import app

app(prog_name="guardian")
