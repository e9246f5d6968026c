// The EROFS directory-entry file type of an inode mode, shared by the bootstrap writer and reader.
#pragma once

#include <sys/stat.h>

#include <cstdint>

#include "erofs.h"

namespace rafs {

constexpr uint8_t direntFileType(uint32_t mode) {
    switch (mode & S_IFMT) {
    case S_IFREG: return erofs::kFtRegular;
    case S_IFDIR: return erofs::kFtDirectory;
    case S_IFCHR: return erofs::kFtCharDevice;
    case S_IFBLK: return erofs::kFtBlockDevice;
    case S_IFIFO: return erofs::kFtFifo;
    case S_IFSOCK: return erofs::kFtSocket;
    case S_IFLNK: return erofs::kFtSymlink;
    default: return erofs::kFtUnknown;
    }
}

}  // namespace rafs
