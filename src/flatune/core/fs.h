// File helpers: whole-file reads with clear errors, and writes that never leave a half-written
// file behind (temporary name, fsync, rename).
#pragma once
#include <string>

namespace flatune {

std::string read_file(const std::string& path);
bool file_exists(const std::string& path);
bool dir_exists(const std::string& path);
void make_dirs(const std::string& path);

// Writes `data` to `path` atomically: `path.tmp-<pid>` is written, fsynced and renamed.
void write_file_atomic(const std::string& path, const std::string& data);

// fsyncs a directory so a rename inside it survives a crash.
void fsync_dir(const std::string& dir);

// Joins path parts with '/'.
std::string join_path(const std::string& a, const std::string& b);

}  // namespace flatune
