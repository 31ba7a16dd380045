// File helpers: whole-file reads with clear errors, and writes that never leave a half-written
// file behind (temporary name, fsync, rename).
#pragma once
#include <functional>
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

// Writes a folder atomically: `fill(tmp)` writes into a sibling temporary folder, which is
// fsynced and renamed to `dir` (replacing an existing one). A crash leaves either the old
// folder or the new one, never a half-written one.
void write_folder_atomic(const std::string& dir, const std::function<void(const std::string& tmp)>& fill);

// Joins path parts with '/'.
std::string join_path(const std::string& a, const std::string& b);

}  // namespace flatune
