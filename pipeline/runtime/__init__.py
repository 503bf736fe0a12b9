"""What every part of a run leans on and none of it is about inference: the one clock (`timing`), processes
stopped by PID (`processes`), children that die with their parent (`lifetime`), live progress (`progress`) and
failures told in one line (`errors`). Nothing here imports the rest of the tool."""
