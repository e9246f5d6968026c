// rafsctl's side of the control socket (see ControlProtocol.h): one connection per request.
#pragma once

#include "daemon/api/ControlProtocol.h"

#include <chrono>
#include <filesystem>
#include <nlohmann/json.hpp>

namespace rafsd {

class ControlClient {
public:
    // Whether to wait, for 10 s at most and within the timeout, for rafsd's next worker while
    // the socket refuses connections (its worker died; the next one is taking the mounts over), or
    // is also absent (a reload: the old worker removed it, the next one binds it once ready).
    enum class WaitForWorker { No, WhileRefused, WhileRefusedOrAbsent };

    ControlClient(std::filesystem::path socket, std::chrono::milliseconds timeout,
                  WaitForWorker wait = WaitForWorker::No);

    // Sends `request` and returns rafsd's response object when it says ok. Throws rafs::Error
    // when rafsd cannot be reached ("cannot connect to /run/rafsd/api.sock: No such file or
    // directory (is rafsd serve running?)"), does not answer within the timeout, or answers
    // with an error (then the message is rafsd's). Not reached (after the WaitForWorker wait),
    // it is a rafs::SystemError with connect(2)'s errno: ENOENT or ECONNREFUSED when nothing
    // listens; one that ends before the answer (rafsd gone meanwhile) is ECONNRESET.
    nlohmann::json call(const Request& request) const;

private:
    std::filesystem::path socket_;
    std::chrono::milliseconds timeout_;
    WaitForWorker wait_;
};

}  // namespace rafsd
