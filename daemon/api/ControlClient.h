// rafsctl's side of the control socket (see ControlProtocol.h): one connection per request.
#pragma once

#include "daemon/api/ControlProtocol.h"

#include <chrono>
#include <filesystem>
#include <nlohmann/json.hpp>

namespace rafsd {

class ControlClient {
public:
    ControlClient(std::filesystem::path socket, std::chrono::milliseconds timeout);

    // Sends `request` and returns rafsd's response object when it says ok. Throws rafs::Error
    // when rafsd cannot be reached ("cannot connect to /run/rafsd/api.sock: No such file or
    // directory (is rafsd serve running?)"), does not answer within the timeout, or answers
    // with an error (then the message is rafsd's). A socket that refuses connections (its
    // worker died) is tried again for 10 s, while the next worker starts. Not reached, it is a
    // rafs::SystemError with connect(2)'s errno: ENOENT or ECONNREFUSED when nothing listens; one
    // that ends before the answer (rafsd gone meanwhile) is ECONNRESET.
    nlohmann::json call(const Request& request) const;

private:
    std::filesystem::path socket_;
    std::chrono::milliseconds timeout_;
};

}  // namespace rafsd
