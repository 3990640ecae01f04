"""Running a user's script under the doctor: the command line, the child process, its bootstrap and the session that writes the record."""
