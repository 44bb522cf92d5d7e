// The console left out of this build (-DINFERBOX_CONSOLE=OFF): no files to serve.
#include "console/assets.h"

namespace inferbox {

const std::vector<console_asset> &console_assets() {
    static const std::vector<console_asset> none;
    return none;
}

} // namespace inferbox
