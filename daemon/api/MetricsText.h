// The Prometheus text exposition format (version 0.0.4): families, each with its HELP and TYPE
// lines before its samples, label values escaped.
// https://prometheus.io/docs/instrumenting/exposition_formats/ describes it.
#pragma once

#include "daemon/core/LatencyHistogram.h"

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace rafsd {

class MetricsText {
public:
    using Labels = std::vector<std::pair<std::string_view, std::string>>;

    // Starts a family; its samples follow. `type`: counter, gauge or histogram.
    void family(std::string_view name, std::string_view type, std::string_view help);
    void sample(std::string_view name, const Labels& labels, uint64_t value);
    // The _bucket, _sum (seconds) and _count samples of a histogram family in seconds.
    void histogram(std::string_view name, const Labels& labels, const LatencyHistogram::Snapshot& snapshot);

    const std::string& text() const { return text_; }

private:
    void labelsOf(const Labels& labels, std::string_view extra_name = {}, std::string_view extra_value = {});

    std::string text_;
};

}  // namespace rafsd
