"""The torch-free base every layer stands on: the user's errors (`errors`), files written whole (`files`), rows read
from files, `datasets` folders and hub ids (`data`), user functions named in configs (`functions`) and
`manifest.json` (`manifest`). The ranking store and app use these without the runtime."""
