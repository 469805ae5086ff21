"""The file sensor: model weights on disk (inventory), arriving (downloads) and leaving
(exfiltration), and fine-tuning artifacts.

- **Inventory** (`walk`, `roots`). A first scan walks the roots: the catalog's model locations
  (`agent/catalog/model_locations.toml`: Hugging Face hub cache, Ollama, LM Studio, llama.cpp,
  GPT4All, torch hub, Downloads), home directories, and configured paths. Each regular file costs
  one `lstat`; a file whose (device, inode, size, mtime) was already judged not to be a model is
  skipped without a read (the judged set persists across restarts, 8 bytes a file). Others get a
  16-byte read and the library's quick check; only candidates are identified
  (`agent.modelfiles.identify_file`).
- **Hashes** (`hash_queue`, `inventory`). Each model's SHA-256 is computed in the background at a
  bounded rate and cached by (device, inode, size, mtime) in `<state_dir>/files.db`, so a restart
  re-hashes nothing. A model is reported (ModelFileObservation) once its hash is known, so policy
  can approve it by hash at first sight; `inventory()` lists it at once.
- **Changes** (`watch`, `changes`). watchdog (inotify on Linux) watches the model locations,
  Downloads, sync folders, removable media and configured paths recursively, and the folders of
  models found elsewhere non-recursively (at most `max_watches` watches in all). Events go into a
  bounded queue (drops are counted); a file is looked at when it is closed after writing, or when
  it has been quiet for `settle_seconds`. While a new file is being written, its writer is looked
  for in `/proc/*/fd` (`agent.system.writers`).
- **Exfiltration** (`archives`, `renames`, `naming`). A model arriving below a removable-media
  mount (`agent.system.mounts`) or a cloud-sync folder; an archive whose listing holds a model, or
  that is written by a process holding a known model open, or next to one; a model renamed from
  its format's name to an innocent one (same inode), or copied under an innocent name (same hash
  as a known model). Downloads are named by their hub (cache layout, Ollama manifest, or the
  network sensor's hint).
- **Fine-tuning artifacts** (`training`: adapters, `checkpoint-N/`, trainer and optimizer state)
  become TrainingArtifactObservations, with their writer when found, for FineTuningDetector.

`sensor` is what the pipeline holds; `worker` is the one thread that does the file work, at low
CPU and I/O priority. The sensor produces observations only: `agent.detection.evidence` turns
them into wire messages.
"""
